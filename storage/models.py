"""The ORM schema (SQLAlchemy 2). Alembic migrations in ``storage/migrations`` create exactly this schema.

Masks are stored as compressed COCO RLE strings (pixel-exact, holes and several parts kept); polygons exist
only on export. Every table holds ids of its own; the ids a COCO file used are kept in ``coco_id`` columns so
that importing the same file twice changes nothing and an export gives back the file's ids.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import List, Optional

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    categories: Mapped[List["Category"]] = relationship(back_populates="project", cascade="all, delete-orphan")
    images: Mapped[List["Image"]] = relationship(back_populates="project", cascade="all, delete-orphan")


class Category(Base):
    """One label of a project's label set: its name, the colour objects are drawn in, and the key (1-9) that
    finishes an object as this label. A key belongs to at most one label of a project."""

    __tablename__ = "categories"
    __table_args__ = (UniqueConstraint("project_id", "coco_id"), UniqueConstraint("project_id", "name"),
                      Index("ix_categories_project_hotkey", "project_id", "hotkey", unique=True))
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    coco_id: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    supercategory: Mapped[str] = mapped_column(String(200), default="")
    color: Mapped[str] = mapped_column(String(7), default="", server_default="")  # "#rrggbb"
    hotkey: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)  # 1-9, or none

    project: Mapped[Project] = relationship(back_populates="categories")


class Image(Base):
    """One image of a project. The file is stored once by content (``sha256``), whatever its name."""

    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("project_id", "sha256"), UniqueConstraint("project_id", "coco_id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    coco_id: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    file_name: Mapped[str] = mapped_column(String(500))  # the name it was added under (COCO file_name)
    stored_path: Mapped[str] = mapped_column(String(500))  # relative to the image store's root
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    done: Mapped[bool] = mapped_column(default=False)  # accepted in the app (all its objects annotated)
    # team work: who has the image open (a lock that expires after an idle time) and the reviewer's verdict
    locked_by: Mapped[Optional[str]] = mapped_column(String(200), nullable=True)
    locked_at: Mapped[Optional[datetime]] = mapped_column(DateTime, nullable=True)
    review_state: Mapped[str] = mapped_column(String(20), default="", server_default="")  # "" | approved | returned
    review_comment: Mapped[str] = mapped_column(Text, default="", server_default="")
    reviewed_by: Mapped[str] = mapped_column(String(200), default="", server_default="")
    reviewed_at: Mapped[Optional[datetime]] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    project: Mapped[Project] = relationship(back_populates="images")
    annotations: Mapped[List["Annotation"]] = relationship(back_populates="image", cascade="all, delete-orphan",
                                                           order_by="Annotation.id")


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))  # registry name, e.g. "sam_vit_b", "classical"
    version: Mapped[str] = mapped_column(String(200))  # checkpoint hash or engine version string
    checkpoint: Mapped[Optional[str]] = mapped_column(String(1000), nullable=True)
    metrics: Mapped[Optional[dict]] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Annotation(Base):
    """One object mask: compressed COCO RLE in the image's full resolution, plus how it was made."""

    __tablename__ = "annotations"
    __table_args__ = (UniqueConstraint("image_id", "coco_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id", ondelete="RESTRICT"), index=True)
    coco_id: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)  # id in the COCO file it came from
    rle: Mapped[str] = mapped_column(Text)  # compressed COCO RLE counts; size is the image's
    area: Mapped[int] = mapped_column(Integer)
    bbox_x: Mapped[float] = mapped_column(Float)
    bbox_y: Mapped[float] = mapped_column(Float)
    bbox_w: Mapped[float] = mapped_column(Float)
    bbox_h: Mapped[float] = mapped_column(Float)
    iscrowd: Mapped[int] = mapped_column(Integer, default=0)
    author: Mapped[str] = mapped_column(String(200), default="")
    model_version_id: Mapped[Optional[int]] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"),
                                                            nullable=True)
    interactions: Mapped[Optional[list]] = mapped_column(JSON, nullable=True)  # prompt log, in order
    n_interactions: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)  # time the annotator spent on the object
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    image: Mapped[Image] = relationship(back_populates="annotations")
    category: Mapped[Category] = relationship()
    model_version: Mapped[Optional[ModelVersion]] = relationship()


class StoredEmbedding(Base):
    """An image embedding kept in an embedding store (iseg_core.embedding_store): which model version's
    (``cache_key``) embedding of which image content (``sha256``) is in which store (``store_url``). Images of
    every project with that content share it; a project's images "ready for" a model are those with a row."""

    __tablename__ = "stored_embeddings"
    __table_args__ = (UniqueConstraint("sha256", "cache_key", "store_url"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    cache_key: Mapped[str] = mapped_column(String(300))
    store_url: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Proposal(Base):
    """A proposed object (segment-everything) of an image: a pre-annotation with the model's scores. It is no
    accepted work until a person accepts it (then an Annotation is saved and its state is "accepted"), refines it
    (clicks on it; "refined" once saved) or rejects it ("rejected")."""

    __tablename__ = "proposals"
    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    rle: Mapped[str] = mapped_column(Text)  # compressed COCO RLE counts at the image's size
    area: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)  # the model's predicted IoU
    stability: Mapped[float] = mapped_column(Float)
    model: Mapped[str] = mapped_column(String(300))  # the cache key (name@version) of the model that made it
    state: Mapped[str] = mapped_column(String(20), default="proposed")  # proposed | accepted | refined | rejected
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class TrainingRun(Base):
    __tablename__ = "training_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    base_version_id: Mapped[Optional[int]] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"),
                                                           nullable=True)
    result_version_id: Mapped[Optional[int]] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"),
                                                             nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="queued")  # queued | running | done | failed
    author: Mapped[str] = mapped_column(String(200), default="", server_default="")  # who started it
    params: Mapped[Optional[dict]] = mapped_column(JSON, nullable=True)
    metrics: Mapped[Optional[dict]] = mapped_column(JSON, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[Optional[datetime]] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime, nullable=True)
