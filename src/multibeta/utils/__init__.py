"""Small shared utilities: atomic I/O, hashing, runtime selection, seeding, logging, checkpoints."""
