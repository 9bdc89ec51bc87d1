"""deploy/helm/shopmesh, generated from mesh/topology.yaml: the same services, ports, upstreams,
intentions and Kafka topics as the native runtime and compose, as Kubernetes objects for
consul-k8s (Connect injection, ServiceIntentions/ServiceDefaults CRs) and Strimzi (Kafka,
KafkaNodePool, KafkaTopic, KafkaUser CRs). `mesh helm` writes the chart, `mesh helm --check`
(run by the unit tests) fails when a committed file differs from what the topology gives, as
`mesh compose` does for compose.yaml.

The package: `intentions` reads the mesh's intentions from mesh/consul/config-entries;
`manifests` builds each template's objects; `wiring` is the pods' placement and where their
secrets come from; `values` the values files with their sizes; `chart` renders and writes the
chart. docs/kubernetes.md says what is left.
"""
