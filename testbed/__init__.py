"""The testbed: links (shaping proxy, tc in namespaces), probe clients and scenarios."""
