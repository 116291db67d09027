"""Portcullis: the aiohttp front door; the only package that imports aiohttp."""
