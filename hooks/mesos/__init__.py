"""Mesos: turning a task (TaskInfo, or the agent's view of it) into Consul services."""
