"""Renders what analysis computed: console tables, live observers, the HTML page."""
