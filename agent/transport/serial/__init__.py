"""transport/serial"""
