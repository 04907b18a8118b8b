"""Starting and stopping the project's processes (Envoy, the router, the feed server, emulated
nodes) for the demo, the live twin and the tests: each child binds port 0 and reports what it
got (`bound`), each runs in its own process group and is always stopped (`procs`)."""
