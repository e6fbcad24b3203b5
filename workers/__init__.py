"""RQ workers: dequeue a job, load a model, call a method, store what it returns."""
