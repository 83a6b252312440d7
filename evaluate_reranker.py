"""The guide's command, as written: python evaluate_reranker.py --model PATH --dataset FILE --metric ndcg

A thin shell over `finerank evaluate` (same flags; add --baseline B to compare, --out DIR for the report).
"""
import sys

from finerank.cli.app import main

if __name__ == "__main__":
    main(["evaluate", *sys.argv[1:]])
