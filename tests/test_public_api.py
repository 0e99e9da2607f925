"""The names shopmind exports are a contract: changing them is a deliberate act."""

import shopmind


def test_exported_names():
    assert sorted(shopmind.__all__) == ["Settings", "Shop", "ShopmindError", "__version__", "load_settings"]


def test_exported_names_resolve():
    from shopmind.shop import Shop

    assert shopmind.Shop is Shop and callable(shopmind.load_settings)
