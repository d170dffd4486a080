"""Re-encrypting what readers wrote with the newest data key (``course keys rotate``).

Every encrypted column is read as stored (not decrypted by its column type), re-encrypted
with the first key of ``COURSE_DATA_KEYS`` (``MultiFernet.rotate``; plain text from before
encryption is encrypted), and written back, in batches. Run it after putting a new key
first; once it has finished, the old key can be removed. Functions take a session and never
commit.
"""

from __future__ import annotations

from sqlalchemy import Column, Table, Text, bindparam, select, type_coerce, update
from sqlalchemy.orm import Session

from course.crypto import EncryptedText, is_encrypted, rotate
from course.models import Base

BATCH = 500


def encrypted_columns() -> list[tuple[Table, Column[str]]]:
    """Every column stored with :class:`course.crypto.EncryptedText`."""
    found = []
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, EncryptedText):
                found.append((table, column))
    return found


def rotate_data(session: Session) -> dict[str, int]:
    """Re-encrypt every encrypted value with the newest key; how many per column."""
    counts: dict[str, int] = {}
    for table, column in encrypted_columns():
        key = next(iter(table.primary_key.columns))
        raw = type_coerce(column, Text)
        done = 0
        last = None
        while True:
            query = select(key, raw).where(column.is_not(None)).order_by(key).limit(BATCH)
            if last is not None:
                query = query.where(key > last)
            rows = session.execute(query).all()
            if not rows:
                break
            params = [{"k": row[0], "v": rotate(row[1])} for row in rows]
            session.execute(
                update(table)
                .where(key == bindparam("k"))
                .values({column.name: bindparam("v", type_=Text)}),
                params,
                execution_options={"synchronize_session": False},
            )
            done += len(rows)
            last = rows[-1][0]
        counts[f"{table.name}.{column.name}"] = done
    return counts


def plain_values(session: Session) -> int:
    """How many values are still stored in plain text (written before encryption)."""
    count = 0
    for _table, column in encrypted_columns():
        raw = type_coerce(column, Text)
        for (value,) in session.execute(select(raw).where(column.is_not(None))):
            count += not is_encrypted(value)
    return count
