"""Capacity and spot-price feed: sources, the feed server, the refresh loop, policy reload."""
