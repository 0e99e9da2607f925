"""The fast path's query parser: it reads what the FastAPI route would read, and declines (None, so
the route answers) whatever it is not sure about."""

from __future__ import annotations

import pytest

from shopmind.api.fast_routes import recommendation_query


@pytest.mark.parametrize("query, expected", [
    (b"", {"k": 10, "category": None, "exclude_purchased": True}),
    (b"k=5", {"k": 5, "category": None, "exclude_purchased": True}),
    (b"k=200&category=Home%20%3E%20Kitchen&exclude_purchased=false",
     {"k": 200, "category": "Home > Kitchen", "exclude_purchased": False}),
    (b"exclude_purchased=ON&utm_source=mail", {"k": 10, "category": None, "exclude_purchased": True}),
])
def test_reads_what_the_route_reads(query, expected):
    assert recommendation_query(query) == expected


@pytest.mark.parametrize("query", [
    b"k=0", b"k=201", b"k=-1", b"k=five", b"k=", b"k=%C2%B2", b"k=1&k=2", b"category=",
    b"category=" + b"x" * 501, b"exclude_purchased=maybe", b"exclude_purchased=t", b"category=%FF",
    b"k=" + b"9" * 4400, b"k=" + b"0" * 4400 + b"5",  # past int()'s 4,300 digits: a ValueError, a 500
])
def test_declines_what_it_is_not_sure_about(query):
    assert recommendation_query(query) is None
