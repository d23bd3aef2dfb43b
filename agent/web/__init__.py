"""The apps web page: its HTML, ES module and CSS, shipped inside the package."""
