"""The names shopmind exports are a contract: changing them is a deliberate act."""

import shopmind


def test_exported_names():
    assert sorted(shopmind.__all__) == ["Settings", "Shop", "ShopmindError", "__version__", "load_settings"]
