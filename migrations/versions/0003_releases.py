"""releases: traffic splits, shadows, guarded promotions, warm-key pins, history reasons

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('traffic_arms',
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('alias', sa.String(length=64), nullable=False),
    sa.Column('weight', sa.Integer(), nullable=False),
    sa.CheckConstraint('weight >= 0 AND weight <= 100', name=op.f('ck_traffic_arms_weight')),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_traffic_arms_model_id_models'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('model_id', 'alias', name=op.f('pk_traffic_arms'))
    )
    op.create_table('shadows',
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('percent', sa.Float(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('percent > 0 AND percent <= 100', name=op.f('ck_shadows_percent')),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_shadows_model_id_models'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('model_id', name=op.f('pk_shadows'))
    )
    op.create_table('guards',
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('replaced', sa.Integer(), nullable=True),
    sa.Column('window_seconds', sa.Integer(), nullable=False),
    sa.Column('min_requests', sa.Integer(), nullable=True),
    sa.Column('max_error_rate', sa.Float(), nullable=True),
    sa.Column('max_p99_ms', sa.Float(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_guards_model_id_models'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('model_id', name=op.f('pk_guards'))
    )
    with op.batch_alter_table('versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('key_generation', sa.Integer(), nullable=True))
    with op.batch_alter_table('history', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reason', sa.Text(), nullable=True))
    # Production versions hold a role, so they carry a pin: the model's generation, the key they had.
    op.execute("UPDATE versions SET key_generation = (SELECT models.generation FROM models "
               "WHERE models.id = versions.model_id) WHERE EXISTS (SELECT 1 FROM aliases "
               "WHERE aliases.model_id = versions.model_id AND aliases.name = 'production' "
               "AND aliases.version = versions.number)")


def downgrade() -> None:
    with op.batch_alter_table('history', schema=None) as batch_op:
        batch_op.drop_column('reason')
    with op.batch_alter_table('versions', schema=None) as batch_op:
        batch_op.drop_column('key_generation')
    op.drop_table('guards')
    op.drop_table('shadows')
    op.drop_table('traffic_arms')
