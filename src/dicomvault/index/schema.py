"""The complete schema: importing this registers every table on ``Base.metadata``."""

from __future__ import annotations

import dicomvault.access.models  # noqa: F401 - registers identity tables
import dicomvault.audit.models  # noqa: F401 - registers audit tables
import dicomvault.index.models  # noqa: F401 - registers archive tables
from dicomvault.index.base import Base

metadata = Base.metadata
