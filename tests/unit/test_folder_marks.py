"""tests/conftest.py gives each test its folder's time-out and marker, unless the test says otherwise."""

import pytest


def test_a_unit_test_gets_the_unit_time_out_and_no_integration_marker(request):
    assert request.node.get_closest_marker("timeout").args == (60,)
    assert request.node.get_closest_marker("integration") is None


@pytest.mark.timeout(5)
def test_an_explicit_time_out_wins_over_the_folders(request):
    assert request.node.get_closest_marker("timeout").args == (5,)
