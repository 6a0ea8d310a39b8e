"""Decoding: page_ext data and the kernel's own text, as whole-array operations.

Design.  Everything here is below the clients (issue 19): functions and
small classes over numpy arrays, given a :class:`drgn.Program` only for the
facts they need from the target's DWARF or memory; none knows a session, a
command or an option.

* :mod:`.engine`: structured dtypes from DWARF, chunked reads of tables and
  the memmap, masks, factorizing, lookups spread over rows;
* :mod:`.flags`: ``%pGg``/``%pGp`` flag names;
* :mod:`.kformat`: the kernel's own format strings and names (gfp flags,
  migratetypes, migrate reasons), symbolized stacks;
* :mod:`.stackdepot`: stack depot handles to frames, in bulk;
* :mod:`.memcg`: ``page->memcg_data`` to a memcg's path;
* :mod:`.owner`: page_owner's record columns (selection, corruption bits,
  pageblock migratetypes, the target's clock);
* :mod:`.sums`: pages and allocations per key.

A client (:mod:`inspector.clients`) puts these together over a session.
"""
