"""Starting and stopping the project's processes (Envoy, the router, the feed server, emulated
nodes) for the demo, the live twin and the tests: one `free_port`, one process group."""
