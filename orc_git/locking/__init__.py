"""Lockers: the spec's Locker interface and its solo, p2p (file) and composite implementations."""
