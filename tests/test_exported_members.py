import klayengo


def test_all_is_sorted_and_complete() -> None:
    assert klayengo.__all__ == sorted(klayengo.__all__)
    public = {
        name
        for name in dir(klayengo)
        if not name.startswith("_")
        and name not in {"annotations"}
        and not isinstance(getattr(klayengo, name), type(klayengo))
    }
    assert public == set(klayengo.__all__)


def test_public_objects_report_the_package_as_their_module() -> None:
    for name in klayengo.__all__:
        assert getattr(klayengo, name).__module__ == "klayengo", name
