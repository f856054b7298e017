"""proposed objects (segment-everything) to review

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

Pre-annotations a SAM-family model proposes for an image, with their predicted IoU and stability score; a
person accepts, refines or rejects each (``state``). They are not accepted work until accepted.
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'proposals',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('image_id', sa.Integer(), nullable=False),
        sa.Column('rle', sa.Text(), nullable=False),
        sa.Column('area', sa.Integer(), nullable=False),
        sa.Column('score', sa.Float(), nullable=False),
        sa.Column('stability', sa.Float(), nullable=False),
        sa.Column('model', sa.String(length=300), nullable=False),
        sa.Column('state', sa.String(length=20), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['image_id'], ['images.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(op.f('ix_proposals_image_id'), 'proposals', ['image_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_proposals_image_id'), table_name='proposals')
    op.drop_table('proposals')
