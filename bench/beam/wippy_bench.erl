%% The BEAM side of bench/bench_beam.py: ping-pong and spawn-to-park, the same message patterns as the
%% Lua processes of bench/bench_messages.py and bench/bench_spawn.py.
%%
%% Compiled at run time by bench_beam.py (`erlc -o TMP bench/beam/wippy_bench.erl`) and run as
%%
%%     erl -noshell [+S 1] -pa TMP -run wippy_bench main pingpong table|integer ROUNDTRIPS REPEATS
%%     erl -noshell [+S 1] -pa TMP -run wippy_bench main spawn PROCESSES REPEATS
%%
%% Each repeat prints one line `result KEY=VALUE ...` (seconds, bytes); bench_beam.py parses them.
%% Nothing here judges a figure.
-module(wippy_bench).
-export([main/1, pong/0, idle/0]).

main([Test | Args]) ->
    try run(Test, Args) of
        ok -> halt(0)
    catch Class:Reason:Stack ->
        io:format(standard_error, "wippy_bench: ~p:~p~n~p~n", [Class, Reason, Stack]),
        halt(1)
    end.

run("pingpong", [Kind, N, Repeats]) ->
    K = list_to_atom(Kind),
    R = list_to_integer(Repeats),
    Rounds = list_to_integer(N),
    _ = pingpong(K, 2000),                       % warm-up: loads the code, sizes the heaps
    lists:foreach(fun(_) ->
        garbage_collect(),
        S = pingpong(K, Rounds),
        io:format("result test=pingpong kind=~s roundtrips=~b seconds=~.9f~n", [Kind, Rounds, S])
    end, lists:seq(1, R)),
    ok;
run("spawn", [N, Repeats]) ->
    Count = list_to_integer(N),
    W = spawn(?MODULE, idle, []),               % warm-up: loads the code (the Lua side spawns one too)
    W ! stop,
    lists:foreach(fun(_) -> spawn_test(Count) end, lists:seq(1, list_to_integer(Repeats))),
    ok.

%% ---------------------------------------------------------------------------------------- ping-pong
%% `ping` (the calling process) sends to `pong` and waits for the answer, N times; `pong` answers every
%% message with the payload it got. The payload is the map #{i => I, s => <<"x">>} (our {i = i, s = "x"})
%% or the integer I. Like ours, every send copies the payload (BEAM copies a message into the receiver's
%% heap), and ping matches the reply's payload. The time includes spawning pong, as ours does.

pong() ->
    receive
        {ping, From, Payload} -> From ! {pong, Payload}, pong();
        stop -> ok
    end.

pingpong(Kind, N) ->
    T0 = erlang:monotonic_time(nanosecond),
    Pong = spawn(?MODULE, pong, []),
    ping(Kind, Pong, 1, N),
    T1 = erlang:monotonic_time(nanosecond),
    Pong ! stop,
    (T1 - T0) / 1.0e9.

ping(_Kind, _Pong, I, N) when I > N -> ok;
ping(table, Pong, I, N) ->
    Pong ! {ping, self(), #{i => I, s => <<"x">>}},
    receive {pong, #{i := I}} -> ok end,
    ping(table, Pong, I + 1, N);
ping(integer, Pong, I, N) ->
    Pong ! {ping, self(), I},
    receive {pong, I} -> ok end,
    ping(integer, Pong, I + 1, N).

%% ---------------------------------------------------------------------------------------- spawn
%% The calling process spawns N processes that each park in a receive, keeping no list of them (as the
%% Lua spawner keeps none), then spawns one marker that messages it back. The time runs from the first
%% spawn until every one of the N is parked: on one scheduler (+S 1) the run queue is FIFO, so the
%% marker's message comes after all of them ran, and the clock stops there (a checker then confirms that
%% all N are in `waiting` state; the check is not timed). With more schedulers the clock stops only
%% after a check that found all N waiting (the check is timed then). Memory: the growth of
%% erlang:memory(processes) and of the VM's VmRSS, divided by N, after a collection of the spawner.

idle() ->
    receive stop -> ok end.

spawn_loop(0) -> ok;
spawn_loop(K) -> spawn(?MODULE, idle, []), spawn_loop(K - 1).

spawn_test(N) ->
    garbage_collect(),
    Base = erlang:system_info(process_count),
    Mem0 = erlang:memory(processes),
    Rss0 = rss(),
    T0 = erlang:monotonic_time(nanosecond),
    spawn_loop(N),
    T1 = erlang:monotonic_time(nanosecond),
    Self = self(),
    spawn(fun() -> Self ! marker end),
    receive marker -> ok end,
    Tm = erlang:monotonic_time(nanosecond),
    Checks = wait_parked(N, 0),
    T2 = case {Checks, erlang:system_info(schedulers_online)} of
             {1, 1} -> Tm;                        % FIFO: all were parked when the marker answered
             _ -> erlang:monotonic_time(nanosecond)
         end,
    garbage_collect(),
    Mem1 = erlang:memory(processes),
    Rss1 = rss(),
    Per = case idle_pids() of [P | _] -> element(2, erlang:process_info(P, memory)); [] -> 0 end,
    io:format("result test=spawn processes=~b seconds=~.9f loop_seconds=~.9f checks=~b "
              "memory_per=~.3f rss_per=~.3f process_info_memory=~b schedulers=~b~n",
              [N, (T2 - T0) / 1.0e9, (T1 - T0) / 1.0e9, Checks, (Mem1 - Mem0) / N, (Rss1 - Rss0) / N,
               Per, erlang:system_info(schedulers_online)]),
    lists:foreach(fun(P2) -> P2 ! stop end, idle_pids()),
    wait_count(Base).

%% How many checks it took until all N idle processes were waiting (1: they were at the marker).
wait_parked(N, Checks) ->
    Self = self(),
    Checker = spawn(fun() -> Self ! {parked, length([P || P <- idle_pids(),
                                                          erlang:process_info(P, status) =:= {status, waiting}])}
                    end),
    receive {parked, K} when K >= N -> _ = Checker, Checks + 1;
            {parked, _} -> erlang:yield(), wait_parked(N, Checks + 1)
    end.

idle_pids() ->
    [P || P <- erlang:processes(),
          erlang:process_info(P, initial_call) =:= {initial_call, {?MODULE, idle, 0}}].

wait_count(Base) ->
    case erlang:system_info(process_count) =< Base of
        true -> ok;
        false -> timer:sleep(1), wait_count(Base)
    end.

rss() ->
    {ok, Status} = file:read_file("/proc/" ++ os:getpid() ++ "/status"),
    [Line] = [L || L <- binary:split(Status, <<"\n">>, [global]), binary:match(L, <<"VmRSS:">>) =/= nomatch],
    [_, Kb | _] = binary:split(Line, [<<" ">>, <<"\t">>], [global, trim_all]),
    binary_to_integer(Kb) * 1024.
