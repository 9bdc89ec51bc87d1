-- The users every environment starts with; ids are fixed so tests and tokens can name them.
INSERT INTO users (id, name, email, roles)
VALUES
    ('alice', 'Alice', 'alice@shopmesh.local', '{user}'),
    ('bob', 'Bob', 'bob@shopmesh.local', '{user}'),
    ('admin', 'Admin', 'admin@shopmesh.local', '{user,admin}')
ON CONFLICT DO NOTHING;
