"""What-if simulator: the routing core driven by simulated time and traffic."""
