-- Each saga keeps its definition's shape (its steps' names and order, its
-- waits), so that a tool without the service's code can draw it.
ALTER TABLE {{.Sagas}} ADD COLUMN shape TEXT NOT NULL DEFAULT '';
