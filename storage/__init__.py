"""iseg storage: projects, images and annotation masks (COCO RLE) in SQLite by default, PostgreSQL by URL."""
from .coco import ExportResult, ImportReport, export_coco, import_coco
from .exports import export_png
from .database import Database, data_home, default_url
from .errors import CocoFormatError, StorageBusy, StorageError
from .images import ImageStore
from .store import AnnotationRecord, CategoryRecord, ImageRecord, ProjectRecord, Stats, Store

__all__ = ["AnnotationRecord", "CategoryRecord", "CocoFormatError", "Database", "ExportResult", "ImageRecord",
           "ImageStore", "ImportReport", "ProjectRecord", "Stats", "StorageBusy", "StorageError", "Store",
           "data_home", "default_url", "export_coco", "export_png", "import_coco"]
