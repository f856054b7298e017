"""embeddings kept in an embedding store

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

One row per (image content, model version, store) whose embedding an embedding store holds: written by
``python -m iseg_core.precompute`` and by the studio when it encodes an image with a store attached; the Images
tab's "ready for the model" filter reads it.
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'stored_embeddings',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('cache_key', sa.String(length=300), nullable=False),
        sa.Column('store_url', sa.String(length=1000), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('sha256', 'cache_key', 'store_url'),
    )
    op.create_index(op.f('ix_stored_embeddings_sha256'), 'stored_embeddings', ['sha256'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_stored_embeddings_sha256'), table_name='stored_embeddings')
    op.drop_table('stored_embeddings')
