"""HTTP/1.1 for the WSGI worker: connections and their codec (h11 or httptools), environ, body, response."""
