"""``consul-mesos-executor``: a Mesos custom executor that registers its task in Consul."""
