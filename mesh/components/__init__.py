"""The mesh's components as configs: for each (Consul, the edge's Envoy, Kafka, Postgres, Jaeger,
Prometheus, the rate-limit service), what it is told, generated from (topology, placement), for
whichever backend runs it (mesh/runtime natively, mesh/compose as containers)."""
