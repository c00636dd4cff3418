"""Key hierarchy, envelope encryption and blind indexes (DESIGN.md "Key hierarchy")."""
