"""who started a training run

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

The signed-in user who pressed Fine-tune (empty for runs recorded before, and without sign-in).
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('training_runs', sa.Column('author', sa.String(length=200), server_default='', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('training_runs') as batch_op:
        batch_op.drop_column('author')
