/** The agent's version, also sent in the User-Agent header (`ingest-agent/<version>`). */
export const VERSION = "0.1.0";
