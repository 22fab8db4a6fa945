# Makes conf/ a package (tetris_train.conf once installed) so Hydra finds it from any folder.
