"""qastream.topics.GRAPH is the graph the app really runs: one edge per agent, each on its topic."""

import importlib
import pkgutil

import pytest

import qastream.agents
from qastream.app import app, topics
from qastream.errors import ErrorClass
from qastream.topics import GRAPH


def all_agents() -> dict[str, object]:
    for module in pkgutil.iter_modules(qastream.agents.__path__):
        importlib.import_module(f"qastream.agents.{module.name}")
    return {name.rsplit(".", 1)[-1]: agent for name, agent in app.agents.items()}


def test_every_agent_is_an_edge_of_the_graph_and_every_edge_an_agent():
    assert set(all_agents()) == {edge.agent for edge in GRAPH}


def test_each_agent_consumes_the_topic_its_edge_names():
    agents = all_agents()
    for edge in GRAPH:
        (channel,) = [agents[edge.agent].channel]
        assert channel.get_topic_name() == getattr(topics, edge.consumes).get_topic_name(), edge


def test_every_topic_the_graph_names_exists_and_every_topic_is_consumed():
    named = {edge.consumes for edge in GRAPH} | {t for edge in GRAPH for t in edge.produces}
    layout = topics.layout()
    assert {getattr(topics, name).get_topic_name() for name in named} == set(layout)


@pytest.mark.parametrize("error_class, topic", [
    (ErrorClass.OVERLOAD, "overload"),
    (ErrorClass.QUOTA, "quota"),
    (ErrorClass.PERMANENT, "permanent"),
    (ErrorClass.REJECTED, "permanent"),
    (ErrorClass.SCORING, "permanent"),
    ("overload", "overload"),   # a class read back from the wire is a plain string
    ("quota", "quota"),
    (None, "permanent"),
])
def test_each_error_class_routes_to_its_topic(error_class, topic):
    assert topics.for_error(error_class) is getattr(topics, topic)
