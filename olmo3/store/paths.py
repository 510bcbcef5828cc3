"""Where the conversation database lives by default.

Kept apart so that it can take the app's name and folders from one shared place later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["APP_NAME", "DB_FILENAME", "default_db_path"]

APP_NAME: Final = "Olmo Desktop"
DB_FILENAME: Final = "conversations.sqlite3"


def default_db_path() -> Path:
    """``<platformdirs user data dir>/Olmo Desktop/conversations.sqlite3`` (created on demand)."""
    import platformdirs  # local import: keep `import olmo3.store` cheap for the crash-test child

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / DB_FILENAME
