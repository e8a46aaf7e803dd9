"""rule versions: scoring and lifecycle rules published like sequences

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 12:00:00.000000

Every process loads the scoring and lifecycle rules the same way as the sequences: the
process with the YAML folder publishes them, the others read the latest published version.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa



# revision identifiers, used by Alembic.
revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'rule_versions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('version', sa.String(length=16), nullable=False),
        sa.Column('document', sa.JSON(), nullable=True),
        sa.Column('source_path', sa.String(length=500), nullable=False),
        sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_rule_versions')),
        sa.UniqueConstraint('kind', 'version', name='uq_rule_versions_kind_version'),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('rule_versions')
