"""team work: image locks and review states

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Every image gains who has it open (``locked_by``, ``locked_at``) and the reviewer's verdict (``review_state``:
"" none, "approved" or "returned", with ``review_comment``, ``reviewed_by``, ``reviewed_at``). Existing images
start unlocked and unreviewed.
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('images', sa.Column('locked_by', sa.String(length=200), nullable=True))
    op.add_column('images', sa.Column('locked_at', sa.DateTime(), nullable=True))
    op.add_column('images', sa.Column('review_state', sa.String(length=20), server_default='', nullable=False))
    op.add_column('images', sa.Column('review_comment', sa.Text(), server_default='', nullable=False))
    op.add_column('images', sa.Column('reviewed_by', sa.String(length=200), server_default='', nullable=False))
    op.add_column('images', sa.Column('reviewed_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('images') as batch_op:
        for column in ('reviewed_at', 'reviewed_by', 'review_comment', 'review_state', 'locked_at', 'locked_by'):
            batch_op.drop_column(column)
