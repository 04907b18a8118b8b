"""The live twin: a scenario in real time through real Envoy, the router and emulated nodes.

`simulate --scenario F --live` runs the simulator on the scenario, then the same
scenario through the real stack, and reports both side by side (docs/reference.md,
"Live twin"). The pieces:

- `realtime`: `LiveWorld`, the simulator's own world lifecycle (`simulator.lifecycle`,
  whose physics are `simulator.physics`) driven by asyncio timers instead of a heap;
- `timeline`: the scenario played on that world in the node emulator's process
  (`simulator.emulate`, which serves every node and pool of the policy from one
  `LiveWorld`): its feed written every `refresh_seconds`, its events at their times;
- `stack`: the processes (that one, a feed server pushing its feed, the router, Envoy),
  each on a port it bound as 0 and reported, the policy copy naming them; always stopped;
- `fleet`: with a scenario's two or more `gateways`, a redis-server and a router and an
  Envoy per gateway on it; the traffic split by the shares; `gateway_down` / `gateway_up`;
- `load`: the scenario's arrivals, sent open-loop through Envoy and recorded;
- `report`: the live run as a `Result`, the fidelity figures, the HTML page;
- `run`: the command, tying them together.
"""
