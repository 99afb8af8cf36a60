"""M-BEIR data layer: layout, streaming record readers, images, instructions, qrels, columnar cache."""

from rare.data.input_error import DataError
from rare.data.layout import MBEIRRoot
from rare.data.records import Candidate, Enhanced, Query, iter_candidates, iter_queries

__all__ = ["Candidate", "DataError", "Enhanced", "MBEIRRoot", "Query", "iter_candidates", "iter_queries"]
