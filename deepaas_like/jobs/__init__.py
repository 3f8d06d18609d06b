"""Training jobs: SQLAlchemy rows that survive restarts, and the code that runs them."""
