// Every test moves the program break of this process (each builds a heap on it), and some
// assert on it: run them one at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
