-- A conversation created without a title takes the first line of its first message until
-- it is renamed: 'titled' says whether a person chose the title (existing ones: yes).
ALTER TABLE conversations ADD COLUMN titled INTEGER NOT NULL DEFAULT 1;
