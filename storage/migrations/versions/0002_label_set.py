"""label set: a colour and a key (1-9) per category

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Existing categories get the palette's colours and keys 1-9 in the order of their COCO ids, per project, so a
database in use upgrades in place with its labels ready to use.
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# the label colours (storage.store.LABEL_COLOURS) as they were when this revision was written
PALETTE = ["#e6194b", "#3cb44b", "#ffe119", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c", "#fabebe",
           "#008080", "#e6beff", "#9a6324"]


def upgrade() -> None:
    op.add_column('categories', sa.Column('color', sa.String(length=7), server_default='', nullable=False))
    op.add_column('categories', sa.Column('hotkey', sa.Integer(), nullable=True))
    categories = sa.table('categories', sa.column('id', sa.Integer), sa.column('project_id', sa.Integer),
                          sa.column('coco_id', sa.Integer), sa.column('color', sa.String),
                          sa.column('hotkey', sa.Integer))
    conn = op.get_bind()
    rows = conn.execute(sa.select(categories.c.id, categories.c.project_id)
                        .order_by(categories.c.project_id, categories.c.coco_id)).all()
    position = {}
    for cid, project in rows:
        k = position.get(project, 0)
        position[project] = k + 1
        conn.execute(categories.update().where(categories.c.id == cid)
                     .values(color=PALETTE[k % len(PALETTE)], hotkey=k + 1 if k < 9 else None))
    op.create_index('ix_categories_project_hotkey', 'categories', ['project_id', 'hotkey'], unique=True)


def downgrade() -> None:
    op.drop_index('ix_categories_project_hotkey', table_name='categories')
    with op.batch_alter_table('categories') as batch_op:
        batch_op.drop_column('hotkey')
        batch_op.drop_column('color')
