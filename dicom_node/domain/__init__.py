"""Pure domain code: no SQLAlchemy, no pynetdicom, no HTTP."""
