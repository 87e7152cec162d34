"""`python -m benchmarks`: every benchmark case in one run (see benchmarks/suite.py)."""
from benchmarks.suite import main

if __name__ == '__main__':
    main()
