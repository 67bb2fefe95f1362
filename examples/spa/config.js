// Where authvault runs. `?api=http://host:port` in the page's URL overrides it.
export const API_BASE = "http://localhost:8080";
