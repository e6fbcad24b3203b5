"""`python -m workers`: run one job worker (see workers/main.py)."""

from workers.main import main

main()
