"""Real image data that ships through system packages (nothing is downloaded at run time)."""

from .fashion import CLASS_NAMES, DEFAULT_DIR, ENV_VAR, fashion_dir, load_fashion

__all__ = ["load_fashion", "fashion_dir", "CLASS_NAMES", "DEFAULT_DIR", "ENV_VAR"]
