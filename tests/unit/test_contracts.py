"""The event contracts services share agree with the topics the runtime creates."""

from contracts import Topic
from mesh.components import kafka
from services.common.messaging.envelope import dlq_topic


def test_the_services_topics_are_the_ones_topics_yaml_creates_each_with_its_dlq():
    created = {spec.name for spec in kafka.load_topics()}
    assert created == {*Topic, *(dlq_topic(topic) for topic in Topic)}
