-- wrk script of issue 15's "unique tokens" runs (bench/lib/auth.sh): every
-- request carries the next token of a file (Authorization: Bearer), each
-- token once. The requests are built at start (the other headers, Host
-- included, come from wrk's -H options), so a request costs wrk no more
-- than a table lookup. When the file is used up the thread stops and
-- DONE_FILE is written, which tells auth.sh to end wrk (SIGINT: wrk then
-- prints its figures for the time it ran).
--   wrk ... -s auth_cold.lua URL -- TOKEN_FILE DONE_FILE
local reqs, n, i, done_file = {}, 0, 0, nil

function init(args)
    local h = wrk.headers
    for line in io.lines(args[1]) do
        if #line > 0 then
            n = n + 1
            h["Authorization"] = "Bearer " .. line
            reqs[n] = wrk.format(nil, nil, h)
        end
    end
    done_file = args[2]
end

function request()
    i = i + 1
    if i > n then
        if i == n + 1 then
            local f = io.open(done_file, "w")
            f:write(n, "\n")
            f:close()
            wrk.thread:stop()
        end
        i = n -- a request wrk may still send while it stops: a repeat
    end
    return reqs[i]
end
