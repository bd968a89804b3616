-- Databases of the demo's sample systems, next to the router's own (`govbus`, from POSTGRES_DB):
-- commerce's registration system (read by its adapter) and an agency's own database (hrss's sink).
CREATE DATABASE commerce;
CREATE DATABASE agency;
